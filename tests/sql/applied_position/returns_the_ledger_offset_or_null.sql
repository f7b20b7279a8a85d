-- applied_position gives the partition's last applied offset from the ledger,
-- or null for a partition never applied.
insert into pgchain.offsets (group_id, topic, partition, applied_through)
values ('g', 'topic', 0, 41), ('g', 'topic', 1, 7), ('h', 'topic', 0, 99);

do $$
begin
  assert pgchain.applied_position('g', 'topic', 0) = 41,
    format('expected 41, found %s', pgchain.applied_position('g', 'topic', 0));
  assert pgchain.applied_position('g', 'topic', 1) = 7,
    format('expected 7, found %s', pgchain.applied_position('g', 'topic', 1));
  assert pgchain.applied_position('g', 'topic', 2) is null, 'expected null for a partition with no ledger row';
  assert pgchain.applied_position('g', 'other', 0) is null, 'expected null for another topic';
  assert pgchain.applied_position('x', 'topic', 0) is null, 'expected null for another group';
end $$;
