// A kafkajs client for Cutover's tests: produces n records (idempotent,
// acks=all) to a topic, printing each acknowledged record as a JSON line,
// then consumes them in a consumer group, printing each consumed record,
// and commits. Same output as the franz-go client (go/franz).
'use strict';
const { Kafka, logLevel } = require('kafkajs');

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const emit = (event, partition, offset, value) =>
  console.log(JSON.stringify({ event, partition, offset: Number(offset), value }));

async function main() {
  const brokers = arg('bootstrap').split(',');
  const topic = arg('topic');
  const group = arg('group');
  const n = Number(arg('n'));
  const partitions = Number(arg('partitions'));
  const kafka = new Kafka({ clientId: 'cutover-kafkajs', brokers, logLevel: logLevel.WARN });

  // Idempotent: kafkajs allows one request in flight per broker then.
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const batch = 50;
  for (let start = 0; start < n; start += batch) {
    // Record i goes to partition i % partitions, so that the offsets the
    // broker returns (one base offset per partition of a send) say where
    // each record is: the partition's records follow in the order sent.
    const byPartition = new Map();
    for (let i = start; i < Math.min(n, start + batch); i++) {
      const p = i % partitions;
      if (!byPartition.has(p)) byPartition.set(p, []);
      byPartition.get(p).push({ partition: p, key: `k${i % 29}`, value: `kafkajs-${i}` });
    }
    const messages = [...byPartition.values()].flat();
    const sent = await producer.send({ topic, acks: -1, messages });
    for (const m of sent) {
      const base = BigInt(m.baseOffset);
      byPartition.get(m.partition).forEach((r, k) => emit('acked', m.partition, base + BigInt(k), r.value));
    }
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let got = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      emit('consumed', partition, message.offset, message.value.toString());
      got++;
      await consumer.commitOffsets([
        { topic, partition, offset: (BigInt(message.offset) + 1n).toString() },
      ]);
      if (got >= n) done();
    },
  });
  const timeout = setTimeout(() => {
    console.error(`consumed ${got} of ${n} before the timeout`);
    process.exit(1);
  }, 120000);
  await finished;
  clearTimeout(timeout);
  await consumer.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
