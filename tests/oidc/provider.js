// A real OpenID provider (oidc-provider) for the gateway's OIDC discovery test, over HTTPS.
//
//   node provider.js PORT CERT_FILE KEY_FILE KID
//
// The signing key (ES256) is made at start and named KID: starting again with another KID is a
// key rotation. The one client, `agent`, uses the client-credentials grant with the secret in
// OIDC_TEST_CLIENT_SECRET; its access tokens are JWTs for the audience `agent-api` with the scope
// `agent:use`. Prints `ready` once listening.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const [port, certFile, keyFile, kid] = process.argv.slice(2);
const secret = process.env.OIDC_TEST_CLIENT_SECRET;
if (!port || !certFile || !keyFile || !kid || !secret) {
  console.error('usage: OIDC_TEST_CLIENT_SECRET=... node provider.js PORT CERT_FILE KEY_FILE KID');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signing = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
const resource = 'https://gateway.portcullis.test/';

const provider = new Provider(`https://localhost:${port}`, {
  jwks: { keys: [signing] },
  clients: [{
    client_id: 'agent',
    client_secret: secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'ES256',
  }],
  enabledJWA: { requestObjectSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'agent:use',
        audience: 'agent-api',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});

const server = https.createServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile) },
  provider.callback(),
);
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
