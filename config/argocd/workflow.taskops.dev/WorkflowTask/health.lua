-- Argo CD health of a WorkflowTask (workflow.taskops.dev/v1alpha1), after the operator's status
-- contract (docs/api.md, "Status contract"): not yet observed → Progressing; Stalled (failed,
-- canceled, no progress within progressDeadlineSeconds) → Degraded; Ready (completed) →
-- Healthy; Suspended → Suspended; otherwise (queued, processing) → Progressing. The message is
-- the deciding condition's, with the task's progress.
local hs = {}

local function condition(type)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end

local function isTrue(type)
  local c = condition(type)
  return c ~= nil and c.status == "True"
end

local function withProgress(message)
  local summary = obj.status.progressSummary
  if summary ~= nil and summary ~= "" then
    return message .. " (progress " .. summary .. ")"
  end
  return message
end

if obj.status == nil or obj.status.observedGeneration == nil or obj.metadata.generation == nil
    or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

if isTrue("Stalled") then
  hs.status = "Degraded"
  hs.message = withProgress(condition("Stalled").message)
elseif isTrue("Ready") then
  hs.status = "Healthy"
  hs.message = withProgress(condition("Ready").message)
elseif isTrue("Suspended") then
  hs.status = "Suspended"
  hs.message = withProgress(condition("Suspended").message)
elseif isTrue("Reconciling") then
  hs.status = "Progressing"
  hs.message = withProgress(condition("Reconciling").message)
else
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
end
return hs
