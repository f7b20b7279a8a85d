-- What is not an e-mail address gives null: no @, two @, no domain dot, a
-- one-letter top-level domain, leading/trailing/double dots, spaces inside.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      (null::text), (''), ('   '), ('plainaddress'), ('@no-local.com'), ('no-at.example.com'),
      ('two@@example.com'), ('a@b'), ('a@b.c'), ('dots..twice@example.com'), ('.lead@example.com'),
      ('trail.@example.com'), ('spa ce@example.com'), ('a@-bad.com'), ('a@bad-.com'), ('a@c..com'),
      ('010-1234-5678')
    ) c(input)
  loop
    v_got := pgchain.normalize_email(v_case.input);
    assert v_got is null, format('normalize_email(%L): expected null, found %s', v_case.input, v_got);
  end loop;
end $$;
