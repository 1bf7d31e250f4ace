-- The console's plans screen (gateway/store/console_plans.py): the instalment search, earliest due
-- first with a keyset on (due_date, id), by plan id, by status or by due dates over every caller.
-- A caller's search uses ix_instalments_caller_due (0005). docs/CONSOLE.md has the EXPLAINs.

ALTER TABLE instalments
  ADD KEY ix_instalments_due_date (due_date),
  ADD KEY ix_instalments_plan_due (plan_id, due_date),
  ADD KEY ix_instalments_status_due (status, due_date);
