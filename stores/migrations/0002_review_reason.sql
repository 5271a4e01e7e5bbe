-- ragc warm tier, revision 0002: why a review item is held beyond the policy.
--
-- A conflicting duplicate (the same question answered differently in two places, see
-- tasks/duplicates.py) is held with a reason naming both sections; `ragc review list` shows it.

ALTER TABLE ragc.review_items ADD COLUMN reason text NOT NULL DEFAULT '';
