-- MySQL binlog positions `file:pos` compare by file name first, then by
-- position within the file as a number.
do $$
declare
  v_case record;
  v_got  boolean;
begin
  for v_case in
    select * from (values
      ('mysql-bin.000003:154', 'mysql-bin.000002:99999', true),
      ('mysql-bin.000002:99999', 'mysql-bin.000003:154', false),
      ('mysql-bin.000003:154', 'mysql-bin.000003:2000', false),
      ('mysql-bin.000003:2000', 'mysql-bin.000003:154', true),
      ('mysql-bin.000003:154', 'mysql-bin.000003:154', true),
      ('mysql-bin.000003:999', 'mysql-bin.000003:1000', false),
      ('mysql-bin.000003:1000', 'mysql-bin.000003:999', true),
      ('mysql-bin.000010:4', 'mysql-bin.000009:123456', true)
    ) c(a, b, want)
  loop
    v_got := pgchain.position_at_or_after(v_case.a, v_case.b);
    assert v_got is not distinct from v_case.want,
      format('position_at_or_after(%L, %L): expected %s, found %s', v_case.a, v_case.b, v_case.want, v_got);
  end loop;
end $$;
