-- Replaying a parked row runs its chain on the given event ('applied') and
-- marks the row 'replayed' with the resolution, in the same transaction.
create schema t;
create table t.rows (id int primary key, name text);
create procedure t.upsert(inout ev jsonb) language plpgsql as $$
begin
  insert into t.rows values ((ev->'key'->>'id')::int, ev->'after'->>'name');
end $$;

do $$
declare
  v_id     bigint;
  v_status text;
  v_row    pgchain.dead_letters;
begin
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, awaits, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq')
  returning id into v_id;

  call pgchain.replay(v_id, array['t.upsert'], '{"key": {"id": 1}, "after": {"name": "Kim"}}',
    'replayed by recovery', v_status);
  assert v_status = 'applied', format('expected applied, found %s', v_status);
  assert (select name from t.rows where id = 1) = 'Kim', 'expected the chain to write row 1';
  select * into v_row from pgchain.dead_letters where id = v_id;
  assert v_row.status = 'replayed', format('expected status replayed, found %s', v_row.status);
  assert v_row.resolution = 'replayed by recovery', format('expected the resolution given, found %s', v_row.resolution);
  assert v_row.resolved_at is not null, 'expected resolved_at set';
end $$;
