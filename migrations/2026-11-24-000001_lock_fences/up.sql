-- The highest fence that wrote under each lock resource. A write made under a lock whose data
-- has no row to carry a fence (a seat not yet reserved, the next queue position) first claims
-- its resource here, in the same transaction: a smaller fence than the one stored is a holder
-- that lost its lock, and the claim's row lock orders concurrent holders by commit.
CREATE TABLE lock_fences (
    resource TEXT PRIMARY KEY,
    fence BIGINT NOT NULL
);
