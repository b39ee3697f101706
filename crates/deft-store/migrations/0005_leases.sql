-- A running task's lease: which worker runs it, and until when, renewed by heartbeat. A lease
-- that runs out puts the task back in the queue, to continue from its last recorded step.
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires BIGINT;
