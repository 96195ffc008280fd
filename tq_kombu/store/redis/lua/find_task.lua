-- find_task: the id of the message of a Celery task, from the queue's task index.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] task id
-- Returns the message id, or false when the index has none.
--@include "queue_keys"
--@include "layout"
local Q = queue_keys(1)
ensure_layout(Q)
return redis.call('HGET', Q.tasks, ARGV[1])
