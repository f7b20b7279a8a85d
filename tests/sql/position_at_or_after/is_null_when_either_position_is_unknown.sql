-- With either position unknown (null) the answer is null, so callers can
-- decide with coalesce.
do $$
begin
  assert pgchain.position_at_or_after(null, '5') is null, 'expected null when a is null';
  assert pgchain.position_at_or_after('5', null) is null, 'expected null when b is null';
  assert pgchain.position_at_or_after(null, null) is null, 'expected null when both are null';
  assert pgchain.position_at_or_after('mysql-bin.000001:4', null) is null, 'expected null for a binlog position vs null';
  assert coalesce(pgchain.position_at_or_after('7', null), true), 'expected coalesce(..., true) to let the event through';
end $$;
