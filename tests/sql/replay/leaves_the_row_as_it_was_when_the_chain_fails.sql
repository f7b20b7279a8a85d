-- When the chain fails during a replay the error comes out, and once the
-- caller rolls back the replay's work the row is still open, unchanged.
create schema t;
create procedure t.fail(inout ev jsonb) language plpgsql as $$
begin
  raise exception 'member 1 is still missing' using errcode = 'PGW01', detail = 'member:1';
end $$;

do $$
declare
  v_id     bigint;
  v_status text;
  v_raised boolean := false;
  v_row    pgchain.dead_letters;
begin
  insert into pgchain.dead_letters (group_id, pipeline, topic, partition, kafka_offset, entity_key,
                                    status, error_class, error_message, awaits, attempts, dlq_topic)
  values ('g', 'p', 'topic', 0, 3, '{"id": 1}', 'parked', 'dependency', 'member 1 is missing', 'member:1', 1, 'dlq')
  returning id into v_id;

  begin
    call pgchain.replay(v_id, array['t.fail'], '{"key": {"id": 1}}', 'replayed', v_status);
  exception when sqlstate 'PGW01' then
    v_raised := true;
  end;
  assert v_raised, format('expected the chain''s PGW01 to come out of replay, it returned %s', v_status);
  select * into v_row from pgchain.dead_letters where id = v_id;
  assert v_row.status = 'parked' and v_row.resolution is null and v_row.resolved_at is null,
    format('expected the row still parked and unresolved, found %s', row_to_json(v_row));
end $$;
