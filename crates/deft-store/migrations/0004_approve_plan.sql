-- The user's default for `approve_plan`: whether new tasks wait for plan approval.
ALTER TABLE environments ADD COLUMN approve_plan BIGINT NOT NULL DEFAULT 0;
