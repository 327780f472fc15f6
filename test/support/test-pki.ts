import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const openssl = async (args: string[], cwd: string) => (await run('openssl', args, { cwd })).stdout;

export interface TestSigner {
  /** Subject DN in the slash form lists use. */
  dn: string;
  certPath: string;
  keyPath: string;
}

export interface TestPki {
  dir: string;
  /** Hashed CA folder (`<hash>.0`, and `<hash>.r0` once a CRL is published), as security.caPath. */
  caDir: string;
  caDn: string;
  /** A certificate issued by the CA, as a host certificate AppDB signs with. */
  issue(cn: string): Promise<TestSigner>;
  /** `openssl smime -sign`: the S/MIME multipart/signed message of `content`. */
  sign(content: string, signer: TestSigner): Promise<Buffer>;
  /** Revokes the certificates and writes the CA's CRL as `<hash>.r0`, as fetch-crl does. */
  publishCrl(revoked: TestSigner[]): Promise<void>;
  cleanup(): Promise<void>;
}

/** A throw-away CA made with the openssl command, for signature, endorser and CRL tests. */
export async function createTestPki(name = 'Test CA'): Promise<TestPki> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-pki-'));
  const caDir = path.join(dir, 'certificates');
  await mkdir(caDir);
  const caDn = `/DC=org/DC=snf-test/CN=${name}`;
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      '-days',
      '3',
      '-subj',
      caDn,
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  const hash = (await openssl(['x509', '-hash', '-noout', '-in', 'ca.pem'], dir)).trim();
  await writeFile(path.join(caDir, `${hash}.0`), await readFile(path.join(dir, 'ca.pem')));
  await writeFile(path.join(dir, 'index.txt'), '');
  await writeFile(path.join(dir, 'crlnumber'), '01\n');
  await writeFile(
    path.join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test_ca',
      '[test_ca]',
      'database = index.txt',
      'crlnumber = crlnumber',
      'default_md = sha256',
      'default_crl_days = 2',
      '',
    ].join('\n'),
  );
  let serial = 1;

  return {
    dir,
    caDir,
    caDn,
    async issue(cn) {
      const n = serial++;
      const dn = `/DC=org/DC=snf-test/O=Hosts/CN=${cn}`;
      const keyPath = path.join(dir, `signer-${n}.key`);
      const certPath = path.join(dir, `signer-${n}.pem`);
      await openssl(
        ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', dn, '-keyout', keyPath, '-out', `signer-${n}.csr`],
        dir,
      );
      await openssl(
        [
          'x509',
          '-req',
          '-in',
          `signer-${n}.csr`,
          '-CA',
          'ca.pem',
          '-CAkey',
          'ca.key',
          '-set_serial',
          String(1000 + n),
          '-days',
          '2',
          '-out',
          certPath,
        ],
        dir,
      );
      return { dn, certPath, keyPath };
    },
    async sign(content, signer) {
      const input = path.join(dir, `content-${serial++}.json`);
      await writeFile(input, content);
      const { stdout } = await run(
        'openssl',
        ['smime', '-sign', '-in', input, '-signer', signer.certPath, '-inkey', signer.keyPath],
        {
          cwd: dir,
          encoding: 'buffer',
        },
      );
      return stdout;
    },
    async publishCrl(revoked) {
      for (const signer of revoked) {
        await openssl(
          ['ca', '-config', 'ca.cnf', '-keyfile', 'ca.key', '-cert', 'ca.pem', '-revoke', signer.certPath],
          dir,
        );
      }
      await openssl(
        ['ca', '-config', 'ca.cnf', '-keyfile', 'ca.key', '-cert', 'ca.pem', '-gencrl', '-out', 'crl.pem'],
        dir,
      );
      await writeFile(path.join(caDir, `${hash}.r0`), await readFile(path.join(dir, 'crl.pem')));
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
