from cpms_admin.cli.app import main

main()
