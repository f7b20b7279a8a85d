-- provide returns without error both when parked events await the key (it
-- then notifies, seen only after commit) and when none do.
insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                  status, error_class, error_message, awaits, attempts, dlq_topic)
values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq');

do $$
begin
  perform pgchain.provide('member:1');
  perform pgchain.provide('member:2');
  perform pgchain.provide(null);
  assert (select status from pgchain.dead_letters where awaits = 'member:1') = 'parked',
    'expected provide to leave the parked row to the re-drive after commit';
end $$;
