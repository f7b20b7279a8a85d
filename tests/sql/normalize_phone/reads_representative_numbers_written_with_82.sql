-- A representative number written with the country code but no plus reads
-- as it does with one.
do $$
begin
  assert pgchain.normalize_phone('82-1588-1234') = '+8215881234',
    format('82-1588-1234: expected +8215881234, found %s', pgchain.normalize_phone('82-1588-1234'));
  assert pgchain.normalize_phone('+82 1588 1234') = '+8215881234', 'the plus form';
end $$;
