-- Tamper evidence an auditor can rely on.
--
-- The keyed chain: from here on each event's hash is `[key id] || HMAC-SHA256` with a
-- key derived from the server's master key, which is never in the database. Rows
-- written before carry plain sha256 and stay as they are; the old rule is allowed only
-- at or below this position (and never after a keyed row of the same stream).
CREATE TABLE chain_cutover (
    position bigint NOT NULL
);
INSERT INTO chain_cutover (position) SELECT coalesce(max(global_position), 0) FROM events;

-- Signed digests of the whole log: each commits, through a feed position, to every
-- stream's head (sequence and chain hash) in a tree of 65,536 buckets. `line` is the
-- signed JSON line as issued; auditors keep copies outside the database.
CREATE TABLE log_digests (
    digest_id        bigint      PRIMARY KEY,
    through_txid     bigint      NOT NULL,
    through_position bigint      NOT NULL,
    events           bigint      NOT NULL,
    root             bytea       NOT NULL,
    line             text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    pushed_at        timestamptz
);

-- The heads each digest saw, written only for streams that moved since the previous
-- one: a stream's head at digest d is its row with the greatest digest_id <= d.
CREATE TABLE digest_heads (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    digest_id      bigint NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, digest_id)
);

-- The tree as of the newest digest: every stream's leaf by bucket, and each non-empty
-- bucket's hash. A digest rewrites only the buckets its streams fall in.
CREATE TABLE digest_leaves (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    bucket         int    NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE INDEX digest_leaves_bucket ON digest_leaves (bucket);

CREATE TABLE digest_buckets (
    bucket int   PRIMARY KEY,
    hash   bytea NOT NULL
);
