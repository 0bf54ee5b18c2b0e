"""What the registry does not declare, for the generated reference: each command's result and
each group's errors (the texts the engine answers, as in the tests), and each config key's
meaning. A command or key missing here is still documented, without these lines."""

from __future__ import annotations

RESULTS: dict[tuple[str, ...], str] = {
    ("help",): "lines of text: the overview, a group's commands, or one command's usage, "
               "arguments, defaults and examples.",
    ("whoami",): "columns `username, role, auth, knowledge_graph`; `auth` is `password`, "
                 "`api_key:<label>` or `token`.",
    ("status",): "columns `key, value`: `version`, `target`, `uptime`, `sessions` (server), `role`.",
    ("quit",): "leaves the shell.",
    ("user", "list"): "columns `username, role, created_at, last_login_at`, sorted by name.",
    ("user", "create"): "`User '<name>' created with role '<role>'.`",
    ("user", "drop"): "`User '<name>' dropped.` Also deletes the user's API keys and ACL entries and "
                      "closes the user's open sessions.",
    ("user", "password"): "`Password updated for '<name>'.` Closes the user's other password sessions.",
    ("user", "role"): "`Role updated to '<role>' for '<name>'.` Effective on the user's next command.",
    ("user", "show"): "columns `key, value`: role, created_at, last_login_at, one `grant` row per "
                      "knowledge graph (`sales: editor`), one `api_key` row per key label.",
    ("kg",): "`Current knowledge graph: <kg>` or `No knowledge graph selected.`",
    ("kg", "list"): "columns `name, access`; a non-admin sees only the knowledge graphs they can reach.",
    ("kg", "create"): "`Knowledge graph '<name>' created.` then `Switched to knowledge graph: <name>`; "
                      "a non-admin creator becomes its owner.",
    ("kg", "use"): "`Switched to knowledge graph: <name>`",
    ("kg", "drop"): "`Knowledge graph '<name>' dropped.`",
    ("kg", "acl", "list"): "columns `username, role, granted_by, granted_at`.",
    ("kg", "acl", "grant"): "`Granted '<role>' access on '<kg>' to '<user>'.` Replaces an existing entry.",
    ("kg", "acl", "revoke"): "`Revoked access on '<kg>' from '<user>'.`",
    ("kg", "acl", "check"): "columns `username, kg, access, because` (`global role admin`, `ACL entry`, "
                            "`no ACL entry`).",
    ("apikey", "create"): "one row, columns `api_key, label, owner, role, kgs, expires_at`. The secret "
                          "is shown here and never again.",
    ("apikey", "list"): "columns `label, created_at, owner, role, kgs, expires_at, last_used_at, status` "
                        "(`active`, `expired`, `revoked`, `rotating`); never a secret.",
    ("apikey", "revoke"): "`API key '<label>' revoked.` Sessions opened with it are closed at once.",
    ("apikey", "rotate"): "one row, columns `api_key, label, previous_valid_until`.",
    ("token", "issue"): "one row, columns `token, jti, expires_at`.",
    ("token", "revoke"): "`Token '<jti>' revoked.`",
    ("audit",): "newest first, columns `seq, time, actor, source, action, target, outcome, detail`; "
                "outcomes are `ok`, `denied`, `failed`, `locked`.",
    ("audit", "verify"): "`Audit log intact: <n> records.` or an error naming the first record that fails.",
    ("lockout", "list"): "columns `address, failures, locked_until`: addresses with recent failures, then "
                         "locked user names as `user:<name>` (the name as given at login, escaped on output).",
    ("lockout", "clear"): "`Lockout cleared for <address>.` or `Lockout cleared for user:<name>.`",
    ("session", "list"): "columns `session_id, username, auth, address, knowledge_graph, connected_at, "
                         "current`; `current` is `yes` on your own session. Admins see every session, "
                         "others their own.",
    ("session", "kill"): "`Session '<id>' closed.`",
}

ERRORS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("user",): ("User '<name>' already exists", "User '<name>' not found",
                "Unknown role '<r>'. Valid roles: admin, editor, viewer", "Cannot drop the last admin",
                "Cannot change the role of the last admin", "Password too short: at least <n> characters",
                "Password must differ from the user name", "Permission denied: only admins can manage users"),
    ("kg", "create"): ("Knowledge graph '<kg>' already exists",
                       "Permission denied: viewers cannot create knowledge graphs"),
    ("kg", "use"): ("Knowledge graph '<kg>' not found", "Access denied"),
    ("kg", "drop"): ("Knowledge graph '<kg>' not found",
                     "Permission denied: only KG owners can drop this knowledge graph",
                     "Cannot drop current knowledge graph. Switch to another first."),
    ("kg", "acl"): ("Invalid KG role '<r>'. Valid: owner, editor, viewer", "User '<u>' not found",
                    "Knowledge graph '<kg>' not found", "No ACL entry found for user '<u>' on '<kg>'",
                    "Permission denied: only KG owners can manage ACLs", "Access denied"),
    ("apikey",): ("API key with label '<l>' already exists", "API key '<l>' not found",
                  "Role '<r>' exceeds the owner's role '<o>'", "Permission denied: only admins can manage API keys"),
    ("audit",): ("Unknown audit action '<a>'. Valid: …", "Unknown outcome '<o>'. Valid: ok, denied, failed, locked",
                 "Permission denied: only admins can read the audit log"),
    ("lockout",): ("No lockout for <address>", "No lockout for user:<name>",
                   "Permission denied: only admins can manage lockouts"),
    ("session",): ("<command> needs a server: sessions exist only there (connect with --url)",),
    ("session", "kill"): ("Session '<id>' not found", "Session id '<p>' is ambiguous: it starts <id>, <id>",
                          "Session id '<p>' too short: give the id or a unique prefix of at least 8 characters",
                          "Permission denied: only admins can kill sessions"),
}

CONFIG_MEANINGS: dict[str, str] = {
    "data_dir": "the data directory of the local store (shell without --url, and the server)",
    "store": "a postgresql:// URL (or a data directory) of the store, instead of data_dir; PostgreSQL needs INPUTLAYER_SERVER_SECRET_FILE",
    "bootstrap_admin_password": "the password `admin` gets when a store with no users is bootstrapped; "
                                "ignored afterwards. Prefer INPUTLAYER_ADMIN_PASSWORD",
    "server.host": "the address the server listens on; a non-loopback address without TLS prints a warning",
    "server.port": "the server's port; 0 picks a free one and prints it",
    "server.auth_timeout_secs": "seconds a connection has to log in before it is closed (1008)",
    "server.max_message_bytes": "largest message a client may send; a larger one closes the connection "
                                "(1009). The server announces it at login and the shell refuses longer lines itself",
    "server.max_program_lines": "most lines one `execute` program may hold; a longer one is refused whole",
    "server.trusted_proxies": "addresses or CIDR ranges of proxies whose X-Forwarded-For is believed",
    "server.allowed_ips": "CIDR allow-list for clients; empty allows everyone; others get HTTP 403",
    "server.tls.cert": "PEM certificate chain: with `key`, the server speaks TLS (wss://)",
    "server.tls.key": "PEM private key of `cert`",
    "server.tls.keystore": "PKCS#12 keystore instead of cert and key; its password in "
                           "INPUTLAYER_TLS_KEYSTORE_PASSWORD",
    "security.min_password_length": "shortest password accepted for a user",
    "security.lockout_failures": "failed logins from one address within the window that lock it",
    "security.lockout_window_secs": "the window, in seconds, in which failures are counted",
    "security.lockout_secs": "how long a locked address is refused without any password check",
    "security.account_lockout_failures": "failed password logins for one user name, from any addresses, within "
                                         "the window that refuse that name's password logins for a while "
                                         "(its API keys and open sessions keep working)",
    "security.account_lockout_secs": "how long a user name's password logins are refused after that",
    "security.argon2_memory_kib": "argon2id memory cost of password hashes, in KiB",
    "security.argon2_time_cost": "argon2id passes",
    "security.argon2_parallelism": "argon2id lanes",
    "security.auth_mode": "`managed` (users, keys, tokens), `shared_key` (one key from INPUTLAYER_SHARED_KEY "
                          "is admin) or `disabled` (everyone is admin; loopback only)",
    "shell.history_file": "the shell's history file (mode 0600); default "
                          "`$XDG_STATE_HOME/inputlayer/history`",
    "profiles.url": "a named connection (`--profile NAME`, INPUTLAYER_PROFILE): the server, ws:// or wss://",
    "profiles.data_dir": "a named connection: a local data directory instead of a server",
    "profiles.user": "a named connection: the user to log in as (never a password: a profile holding "
                     "one is refused)",
    "profiles.ca_file": "a named connection: an extra trusted CA for wss://",
    "profiles.format": "a named connection: the output format",
    "shell.lock_wait_ms": "how long, in milliseconds, the shell waits for another process's write lock "
                          "on the data directory",
    "shell.max_transaction_secs": "how long a `-1` script may hold the store's write lock before it is "
                                  "rolled back",
    "cluster.redis_url": "Redis shared by a cluster's nodes for lockout and rate counters and the session "
                         "list (also --redis, INPUTLAYER_REDIS_URL); empty: each node counts alone",
    "cluster.node": "this node's name in `.session list` (default: the listener's host:port)",
    "cluster.key_prefix": "prefix of every Redis key, so several clusters can share one Redis",
    "cluster.session_ttl_secs": "how long a node's session list lives in Redis without renewal (renewed "
                                "every third of it)",
    "shell.format": "the shell's output format: table, plain, json or csv; default table on a terminal, "
                    "plain otherwise",
}
