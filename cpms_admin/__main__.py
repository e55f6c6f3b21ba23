from cpms_admin.cli import main

main()
