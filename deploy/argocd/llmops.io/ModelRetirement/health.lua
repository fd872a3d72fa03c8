-- Argo CD health check for llmops.io/ModelRetirement.
-- Reads what the operator publishes (docs/gitops.md): status.observedGeneration and the
-- Ready / Reconciling / Stalled conditions. A retirement waiting for its second person's approval
-- is Suspended; one whose steps run (drain, archive, delete, dispose, report) is Progressing; a
-- finished one (Retired) or a dry run whose plan is written is Healthy.
-- Argo CD runs it in gopher-lua (Lua 5.1) with only the base, table and (safe) os libraries:
-- no `string` or `math` here. `obj` is the object; JSON numbers arrive as Lua numbers (doubles).
local hs = {}

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

-- A condition counts only when it was computed from the current spec.
local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      if c.observedGeneration ~= nil and c.observedGeneration < generation then
        return nil
      end
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" and reconciling.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = text(reconciling, "Waiting for approval")
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling, "Reconciling")
else
  hs.message = text(ready, "Reconciling")
end
return hs
