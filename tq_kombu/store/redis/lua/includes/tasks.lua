-- The task index (hash tasks: Celery task id -> message id), kept by every script that
-- adds or deletes a message; a task id sent again (a retry) points at its newest message.
local function index_task(Q, task_id, id)
  if type(task_id) == 'string' and task_id ~= '' then redis.call('HSET', Q.tasks, task_id, id) end
end

local function unindex_task(Q, task_id, id)
  if type(task_id) == 'string' and task_id ~= '' and redis.call('HGET', Q.tasks, task_id) == id then
    redis.call('HDEL', Q.tasks, task_id)
  end
end
