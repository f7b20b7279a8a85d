-- An e-mail address comes back trimmed (spaces, tabs, newlines) and in lower
-- case; plus tags, apostrophes and sub-domains are kept.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('minjun.kim@example.com', 'minjun.kim@example.com'),
      ('  Minjun.Kim@Example.COM ', 'minjun.kim@example.com'),
      (E'\tname@example.net\n', 'name@example.net'),
      ('USER+TAG@GMAIL.COM', 'user+tag@gmail.com'),
      ('a+tag@sub.example.co.kr', 'a+tag@sub.example.co.kr'),
      ('o''brien@example.ie', 'o''brien@example.ie'),
      ('first_last@ex-ample.org', 'first_last@ex-ample.org'),
      ('12345@daum.net', '12345@daum.net'),
      ('x@y.io', 'x@y.io')
    ) c(input, want)
  loop
    v_got := pgchain.normalize_email(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_email(%L): expected %s, found %s', v_case.input, v_case.want, coalesce(v_got, 'null'));
  end loop;
end $$;
