import { strict as assert } from 'node:assert';
import { JobFeed, ProgressThrottle } from '../../lib/serve/events';
import type { JobEvent, Progress } from '../../lib/serve/store';

const p = (bytesDone: number): Progress => ({ bytesDone, bytesTotal: 100, tensorsDone: 0, tensorsTotal: 1 });

describe('model-stock serve: job events (unit)', () => {
  it('progress at most once per interval, the latest value sent when the interval allows', async () => {
    let clock = 0;
    const sent: [number, number][] = [];
    const t = new ProgressThrottle(
      250,
      (x) => sent.push([clock, x.bytesDone]),
      () => clock,
    );
    t.update(p(1)); // sent at once
    clock = 100;
    t.update(p(2)); // waits for 250
    t.update(p(3)); // replaces 2
    assert.deepEqual(sent, [[0, 1]]);
    clock = 250; // when the timer (150 ms from now) fires
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(sent, [
      [0, 1],
      [250, 3],
    ]);
    clock = 300;
    t.update(p(4));
    await t.drain(); // 4 is still owed: sent once the interval allows
    assert.deepEqual(sent.at(-1), [300, 4]);
    for (let i = 1; i < sent.length; i++) assert.ok(sent[i]![0] - sent[i - 1]![0] >= 0);
    t.update(p(5));
    t.stop();
  });

  it('a stopped throttle sends nothing it still held', async () => {
    let clock = 0;
    const sent: number[] = [];
    const t = new ProgressThrottle(
      250,
      (x) => sent.push(x.bytesDone),
      () => clock,
    );
    t.update(p(1));
    t.update(p(2));
    t.stop();
    clock = 1000;
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(sent, [1]);
  });

  it('a feed numbers events from the stored last id; a flush keeps warnings and the last progress', () => {
    const feed = new JobFeed(7, 2);
    const heard: JobEvent[] = [];
    const stop = feed.listen((e) => heard.push(e));
    feed.emit('progress', p(1));
    feed.emit('warning', { message: 'w1' });
    feed.emit('progress', p(2));
    feed.emit('progress', p(3));
    assert.deepEqual(
      heard.map((e) => e.id),
      [3, 4, 5, 6],
    );
    assert.deepEqual(feed.lastPendingProgress(), p(3));
    assert.deepEqual(
      feed.pendingAfter(4).map((e) => e.id),
      [5, 6],
    );
    const flushed = feed.takePending();
    assert.deepEqual(
      flushed.map((e) => [e.id, e.type]),
      [
        [4, 'warning'],
        [6, 'progress'],
      ],
    );
    assert.deepEqual(feed.pendingAfter(0), []);

    feed.emit('warning', { message: 'w2' });
    let persisted: JobEvent[] = [];
    feed.commit('state', { state: 'succeeded' }, (events) => (persisted = events));
    assert.deepEqual(
      persisted.map((e) => e.id),
      [7, 8],
      'the state is committed with what was pending',
    );
    assert.deepEqual(heard.at(-1), { id: 8, type: 'state', data: { state: 'succeeded' } });
    stop();
  });

  it('a commit that fails is not heard and does not use up its id', () => {
    const feed = new JobFeed(1, 1);
    const heard: JobEvent[] = [];
    feed.listen((e) => heard.push(e));
    assert.throws(() =>
      feed.commit('state', { state: 'running' }, () => {
        throw new Error('disk full');
      }),
    );
    assert.equal(heard.length, 0);
    feed.commit('state', { state: 'running' }, () => undefined);
    assert.equal(heard[0]!.id, 2);
  });
});
