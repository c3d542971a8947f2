-- Joining a second account needs the user's consent: an administrator's `createAgent`
-- for someone who already has a login records an invitation (the role it offers
-- beside it), and the membership starts only when that user accepts it with their
-- own password. A login without an account picks the account the user joined first.
ALTER TABLE invitations
    ADD COLUMN join_name        text,
    ADD COLUMN join_role        text,
    ADD COLUMN join_custom_role uuid;

ALTER TABLE account_memberships ADD COLUMN joined_at timestamptz NOT NULL DEFAULT now();
