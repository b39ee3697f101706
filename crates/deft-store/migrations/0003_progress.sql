-- Where a running task stands (its work step, the step of its plan, what each finished step
-- said), written after each step so that a restarted process continues from there.
ALTER TABLE tasks ADD COLUMN progress TEXT;
