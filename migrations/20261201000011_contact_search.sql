-- Projector `directory`: the contacts' search index (a blind index). Each row is a
-- keyed hash of one normalized name word, e-mail address or phone number of a contact,
-- so contacts are found by them without a searchable copy in clear; erased with the
-- contact. Contacts from before are indexed by `inboxd rebuild directory`.
-- docs/adr/0006-contact-search.md
CREATE TABLE rm_contact_terms (
    account_id uuid NOT NULL,
    term       text NOT NULL,
    contact_id uuid NOT NULL,
    PRIMARY KEY (account_id, term, contact_id)
);
CREATE INDEX rm_contact_terms_contact ON rm_contact_terms (contact_id);
