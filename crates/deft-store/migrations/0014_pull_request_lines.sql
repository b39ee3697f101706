-- Lines a pull request adds and removes, as its diff last read showed them: the task list shows
-- them without reading every diff again. NULL until read, and again after each push.
ALTER TABLE pull_requests ADD COLUMN additions BIGINT;
ALTER TABLE pull_requests ADD COLUMN deletions BIGINT;
