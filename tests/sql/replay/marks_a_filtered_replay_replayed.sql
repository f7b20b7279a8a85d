-- A replay whose chain filters the event reports 'filtered' and still
-- resolves the row as replayed; a dead row can be replayed as well.
create schema t;
create procedure t.drop(inout ev jsonb) language plpgsql as $$
begin
  ev := null;
end $$;

do $$
declare
  v_id     bigint;
  v_status text;
begin
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'dead', 'data', 'bad value', 3, 'dlq')
  returning id into v_id;

  call pgchain.replay(v_id, array['t.drop'], '{"key": {"id": 1}}', 'replayed', v_status);
  assert v_status = 'filtered', format('expected filtered, found %s', v_status);
  assert (select status = 'replayed' and resolution = 'replayed' from pgchain.dead_letters where id = v_id),
    format('expected the row replayed, found %s', (select status from pgchain.dead_letters where id = v_id));
end $$;
