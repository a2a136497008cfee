-- Transfers write two ledger rows, one per user, each with the fence of that user's lock:
-- balance = sum(charge) + sum(transfer_in) - sum(use) - sum(transfer_out) must hold after any run.
ALTER TABLE balance_ledger DROP CONSTRAINT balance_ledger_kind_check;
ALTER TABLE balance_ledger ADD CONSTRAINT balance_ledger_kind_check
    CHECK (kind IN ('charge', 'use', 'transfer_in', 'transfer_out'));
