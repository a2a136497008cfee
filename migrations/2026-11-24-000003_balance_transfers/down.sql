-- Fails while transfer rows exist, on purpose: deleting them would break
-- balance = sum(ledger), and rewriting them as charges and uses would falsify the ledger.
ALTER TABLE balance_ledger DROP CONSTRAINT balance_ledger_kind_check;
ALTER TABLE balance_ledger ADD CONSTRAINT balance_ledger_kind_check
    CHECK (kind IN ('charge', 'use'));
