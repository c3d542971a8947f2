-- Rebuilds run beside the live tables; one that fails leaves them serving and says so
-- here (shown by /readyz and /metrics) until a later rebuild of the projector succeeds.
ALTER TABLE projector_checkpoints
    ADD COLUMN rebuild_error     text,
    ADD COLUMN rebuild_failed_at timestamptz;
