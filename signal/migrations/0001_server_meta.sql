-- Facts about this server instance that survive restarts.
CREATE TABLE IF NOT EXISTS server_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
