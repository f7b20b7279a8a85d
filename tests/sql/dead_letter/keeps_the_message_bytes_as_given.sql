-- The original message is kept byte for byte: key, value and headers as
-- given, a null value stays null (a tombstone), null headers become empty.
do $$
declare
  v_id        bigint;
  v_published boolean;
  v_row       pgchain.dead_letters;
begin
  call pgchain.dead_letter('g', null, 'topic', 0, 1, null, '\x00ff7b7d'::bytea, null,
    array['trace-id', 'empty'], array['\xdeadbeef'::bytea, ''::bytea], null, 'dead', 'unroutable',
    null, null, 'no pipeline takes topic', null, 0, 'topic.dlq', v_id, v_published);
  select * into v_row from pgchain.dead_letters where id = v_id;
  assert v_row.msg_key = '\x00ff7b7d'::bytea, format('expected key \x00ff7b7d, found %s', v_row.msg_key);
  assert v_row.msg_value is null, format('expected a null value to stay null, found %s', v_row.msg_value);
  assert v_row.header_names = array['trace-id', 'empty'], format('expected header names kept, found %s', v_row.header_names);
  assert v_row.header_values = array['\xdeadbeef'::bytea, ''::bytea],
    format('expected header values kept, found %s', v_row.header_values);
  assert v_row.pipeline is null and v_row.entity_key is null,
    'expected an unroutable event to have no pipeline and no key';

  call pgchain.dead_letter('g', null, 'topic', 0, 2, null, null, '\x'::bytea, null, null, null,
    'dead', 'undecodable', null, null, 'not JSON', null, 0, 'topic.dlq', v_id, v_published);
  select * into v_row from pgchain.dead_letters where id = v_id;
  assert v_row.msg_key is null, 'expected a null key to stay null';
  assert v_row.msg_value = '\x'::bytea, format('expected an empty value to stay empty (not null), found %s', v_row.msg_value);
  assert v_row.header_names = '{}'::text[] and v_row.header_values = '{}'::bytea[],
    format('expected null headers stored as empty arrays, found %s %s', v_row.header_names, v_row.header_values);
end $$;
