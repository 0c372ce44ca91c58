"""Who may do what: roles and their permissions (:mod:`core.auth.roles`), password hashing
(:mod:`core.auth.passwords`), demo accounts and the serving check (:mod:`core.auth.setup`). The accounts and
the audit log themselves live in the project database (:mod:`core.store.users`, :mod:`core.store.audit`)."""
