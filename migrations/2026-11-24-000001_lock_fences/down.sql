DROP TABLE lock_fences;
