export default async function globalTeardown() {
  await globalThis.__temporalEnv?.teardown();
}
