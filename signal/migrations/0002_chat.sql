-- Chat: conversations, members, the message log, per-device delivery cursors and
-- attachments. Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- One row per conversation. `last_seq` is the highest sequence number assigned; it never
-- goes down, even when retention deletes old messages, so a seq is never reused.
CREATE TABLE IF NOT EXISTS chat_conversations (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT,
    owner       TEXT,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

-- Who may read and post. `read_seq` is the member's read marker (for unread counts).
CREATE TABLE IF NOT EXISTS chat_members (
    conversation_id TEXT NOT NULL,
    identity        TEXT NOT NULL,
    joined_at       BIGINT NOT NULL,
    read_seq        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, identity)
);
CREATE INDEX IF NOT EXISTS chat_members_identity ON chat_members (identity);

-- The log: messages and the edit/delete events that refer to them, each with its own seq.
-- `body` is the current text of a message (NULL once deleted: a tombstone).
CREATE TABLE IF NOT EXISTS chat_messages (
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    sender          TEXT NOT NULL,
    device          TEXT NOT NULL,
    client_msg_id   TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT,
    reply_to        BIGINT,
    target_seq      BIGINT,
    metadata        TEXT,
    attachments     TEXT,
    server_ts       BIGINT NOT NULL,
    edited_ts       BIGINT,
    deleted         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, seq)
);
-- Idempotent sends: a client message id is stored once per sender.
CREATE UNIQUE INDEX IF NOT EXISTS chat_messages_client_id ON chat_messages (sender, client_msg_id);
CREATE INDEX IF NOT EXISTS chat_messages_ts ON chat_messages (server_ts);

-- What each device of an identity has acknowledged, per conversation (cumulative).
CREATE TABLE IF NOT EXISTS chat_device_cursors (
    identity        TEXT NOT NULL,
    device          TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    acked_seq       BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (identity, device, conversation_id)
);

-- Uploaded files, content-addressed by SHA-256.
CREATE TABLE IF NOT EXISTS chat_attachments (
    id            TEXT PRIMARY KEY NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    uploader      TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
-- Everyone who uploaded the same bytes may download them.
CREATE TABLE IF NOT EXISTS chat_attachment_owners (
    attachment_id TEXT NOT NULL,
    identity      TEXT NOT NULL,
    PRIMARY KEY (attachment_id, identity)
);
-- Which messages carry which attachment: readers of those conversations may download it.
CREATE TABLE IF NOT EXISTS chat_message_attachments (
    attachment_id   TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (attachment_id, conversation_id, seq)
);
