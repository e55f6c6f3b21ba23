"""Privacy: what the system keeps and for how long, and what it holds on a member.

`purge.run_purge` drops what the retention rules no longer allow (`retention` holds what
every category shares and the row categories, `purge_files` the e-mail files,
`purge_batches` the printed batches, `pseudonymise` the closed members; old audit events are
archived by the audit chain, `audit_chain.archive`).
`dossier.write_dossier` answers a member's right of access (GDPR article 15) with
everything held on them, as JSON or a PDF (`dossier_pdf`, which alone loads WeasyPrint).
"""
