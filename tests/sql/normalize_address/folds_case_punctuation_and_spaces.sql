-- An address is folded for matching: lower case, punctuation to spaces,
-- spaces collapsed and trimmed; nothing left gives null.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('서울특별시 강남구 테헤란로 123', '서울특별시 강남구 테헤란로 123'),
      ('서울특별시  강남구   테헤란로 123 ', '서울특별시 강남구 테헤란로 123'),
      ('서울특별시 강남구 테헤란로 123, 4층', '서울특별시 강남구 테헤란로 123 4층'),
      ('서울특별시 강남구 테헤란로 123 (역삼동)', '서울특별시 강남구 테헤란로 123 역삼동'),
      ('123 Main St., Apt. #4', '123 main st apt 4'),
      ('123 MAIN ST APT 4', '123 main st apt 4'),
      ('부산광역시 해운대구 우동 1-2', '부산광역시 해운대구 우동 1 2'),
      (E'10\tDowning\nSt', '10 downing st'),
      ('Rue de l''Église 3', 'rue de l église 3'),
      ('', null),
      ('   ', null),
      ('...', null),
      (null, null)
    ) c(input, want)
  loop
    v_got := pgchain.normalize_address(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_address(%L): expected %s, found %s', v_case.input, coalesce(v_case.want, 'null'), coalesce(v_got, 'null'));
  end loop;
end $$;
