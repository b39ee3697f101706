-- How many times a task's worker stopped renewing its lease (it died or stalled) since the
-- task's owner last wrote to it: the queue gives up on a task at its fourth, rather than send
-- it round the workers for ever. Kept on the task, so that no requeue scans the event log.
ALTER TABLE tasks ADD COLUMN leases_lost BIGINT NOT NULL DEFAULT 0;

-- The count so far, from the log, for the tasks that may still run without their owner
-- writing first (a completed task runs again only after feedback, which starts a new count).
UPDATE tasks SET leases_lost = (
    SELECT COUNT(*) FROM events e
    WHERE e.task_id = tasks.id AND e.kind = 'step'
      AND e.data LIKE '%"cause":"lease_expired"%'
      AND e.seq > COALESCE(
          (SELECT MAX(u.seq) FROM events u WHERE u.task_id = tasks.id AND u.kind = 'user_message'),
          0)
)
WHERE state IN ('queued', 'in_progress', 'needs_attention');
