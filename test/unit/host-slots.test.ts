import { HostSlots } from '../../worker/host-slots.js';

const settled = async (p: Promise<unknown>) => {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
};

describe('HostSlots: a host works through whole images, first come first served', () => {
  test('grants up to the capacity, then queues in arrival order; a release grants the next', async () => {
    const slots = new HostSlots(2);
    const a = slots.acquire('a');
    const b = slots.acquire('b');
    const c = slots.acquire('c');
    const d = slots.acquire('d');
    expect(await settled(a)).toBe(true);
    expect(await settled(b)).toBe(true);
    expect(await settled(c)).toBe(false);
    expect(slots.position('c')).toBe(1);
    expect(slots.position('d')).toBe(2);
    slots.release('a');
    expect(await settled(c)).toBe(true);
    expect(await settled(d)).toBe(false);
    expect(slots.state()).toEqual({ capacity: 2, holders: ['b', 'c'], waiting: ['d'] });
  });

  test('a holder asking again (a retried request) holds at once; a retried waiter keeps its place', async () => {
    const slots = new HostSlots(1);
    await slots.acquire('a');
    expect(await settled(slots.acquire('a'))).toBe(true);
    const b1 = slots.acquire('b');
    void slots.acquire('c');
    const b2 = slots.acquire('b');
    expect(slots.state().waiting).toEqual(['b', 'c']);
    slots.release('a');
    expect(await settled(b2)).toBe(true);
    expect(await settled(b1)).toBe(false);
    expect(slots.state().holders).toEqual(['b']);
  });

  test('a cancelled request leaves the queue', async () => {
    const slots = new HostSlots(1);
    await slots.acquire('a');
    const controller = new AbortController();
    const b = slots.acquire('b', controller.signal);
    const c = slots.acquire('c');
    controller.abort(new Error('workflow cancelled'));
    await expect(b).rejects.toThrow('workflow cancelled');
    slots.release('a');
    expect(await settled(c)).toBe(true);
    expect(slots.state()).toEqual({ capacity: 1, holders: ['c'], waiting: [] });
  });

  test('after a restart, images that were running come back (adopt) before new ones are granted', async () => {
    const slots = new HostSlots(1);
    slots.holdBackUntil(Date.now() + 200);
    const fresh = slots.acquire('new');
    expect(await settled(fresh)).toBe(false);
    slots.adopt('was-running');
    await new Promise((r) => setTimeout(r, 250));
    expect(await settled(fresh)).toBe(false);
    slots.release('was-running');
    expect(await settled(fresh)).toBe(true);
  });

  test('several clouds: the registrations of one revision share one slot, joining it from anywhere in the queue; it frees when the last one leaves', async () => {
    const slots = new HostSlots(1, true);
    const a1 = slots.acquire('register:glance-one:a', undefined, 'sha-a');
    const b1 = slots.acquire('register:glance-one:b', undefined, 'sha-b');
    const a2 = slots.acquire('register:glance-two:a', undefined, 'sha-a');
    const own = slots.acquire('register:glance-one:c');
    expect(await settled(a1)).toBe(true);
    // a's second cloud gets in beside its first, ahead of b; b and c wait for the slot.
    expect(await settled(a2)).toBe(true);
    expect(await settled(b1)).toBe(false);
    expect(await settled(own)).toBe(false);
    expect(slots.state().waiting).toEqual(['register:glance-one:b', 'register:glance-one:c']);
    slots.release('register:glance-one:a');
    expect(await settled(b1)).toBe(false);
    slots.release('register:glance-two:a');
    expect(await settled(b1)).toBe(true);
    // b's second cloud arrives while b holds the slot: in at once; c still waits.
    expect(await settled(slots.acquire('register:synnefo-syn:b', undefined, 'sha-b'))).toBe(true);
    expect(await settled(own)).toBe(false);
  });

  test('one cloud: a revision never shares (each registration its own slot)', async () => {
    const slots = new HostSlots(1);
    await slots.acquire('x', undefined, 'sha-a');
    expect(await settled(slots.acquire('y', undefined, 'sha-a'))).toBe(false);
  });
});
