/**
 * Two projects: `unit` runs in seconds with no server (pure code, fakes, files), `services`
 * runs against the real Temporal dev server (started once by its global set-up), RabbitMQ,
 * qemu-img and HTTP(S) servers. `npm run test:unit` runs the first alone.
 */
const shared = {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' } },
    ],
  },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  modulePathIgnorePatterns: ['<rootDir>/dist/', '<rootDir>/.tools/', '<rootDir>/data/'],
};

/** @type {import('jest').Config} */
export default {
  projects: [
    { ...shared, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...shared,
      displayName: 'services',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts', '<rootDir>/test/e2e/**/*.test.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.js',
      globalTeardown: '<rootDir>/test/support/global-teardown.js',
    },
  ],
  // Integration tests run real processes against real servers on a 2-core machine. Three files
  // at a time: many of them wait (on a server's restart, a list's expiry, a slow download) while
  // the others compute, and a full run keeps both cores about 90 % busy (README, "Tests").
  testTimeout: 120_000,
  maxWorkers: 3,
  // The longest test files first, so neither worker is left with one alone at the end.
  testSequencer: '<rootDir>/test/support/sequencer.js',
};
