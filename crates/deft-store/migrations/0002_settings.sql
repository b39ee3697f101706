-- Facts about the deployment itself, such as the fingerprint of the master key that sealed
-- this database's secrets (so a machine with another key refuses to start instead of
-- failing later on every secret).
CREATE TABLE deft_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
