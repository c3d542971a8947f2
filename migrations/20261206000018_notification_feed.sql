-- New notifications are read for every subscriber of a process at once, in the order
-- of their causing events (api/src/live/notices.rs), not per user.
DROP INDEX rm_notifications_in_feed;
CREATE INDEX rm_notifications_in_feed ON rm_notifications (txid, position, notification_id) WHERE in_app;
