-- Sweeps at scale: a manual sweep resumes its claims from the last account id it leased
-- (kept on the sweep row, written in the claim's own statement), so a claim never re-reads
-- what the sweep already took and a retried sweep job carries on where the last one stopped.

ALTER TABLE sweeps ADD COLUMN claim_cursor text;
