-- A binlog file's trailing number counts as a number (a rollover past six
-- digits still sorts later), and a file name may hold colons of its own.
do $$
begin
  assert pgchain.position_at_or_after('mysql-bin.1000000:4', 'mysql-bin.999999:100'),
    'expected mysql-bin.1000000:4 at or after mysql-bin.999999:100';
  assert not pgchain.position_at_or_after('mysql-bin.999999:100', 'mysql-bin.1000000:4'),
    'expected mysql-bin.999999:100 before mysql-bin.1000000:4';
  assert pgchain.position_at_or_after('a:b:5', 'a:b:4'), 'expected a:b:5 at or after a:b:4';
  assert not pgchain.position_at_or_after('a:b:4', 'a:b:5'), 'expected a:b:4 before a:b:5';
  assert pgchain.position_at_or_after('mysql-bin.000002:4', 'mysql-bin.000001:900'),
    'expected a later file to win over a larger position';
end $$;
