'use strict';
/**
 * Home-tenant routing against hostile `tid` claims, from JavaScript: a `tid`
 * with the dashes of a GUID (8-4-4-4-12) but other characters between them is
 * neither a GUID nor a domain name, so the configured `common` endpoint is
 * kept and the claim never becomes a path segment. (The credentials suite
 * covers routing with certificates; this one needs no openssl.)
 */
const { startMockIdp } = require('../testing');
const { obo, optionsFor, settle } = require('./helpers');

const TENANT_ID = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A user's access token with readable claims; the mock does not check its signature. */
const userToken = (claims) => `${encode({ typ: 'JWT', alg: 'RS256' })}.${encode(claims)}.c2lnbmF0dXJl`;

const GUID_SHAPED = [
  '../../x/-abc/-def/-ghi/-jklmnopqrstu',
  '..%2f..%-2fx/-abcd-efgh-ijklmnopqrst',
  'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz',
  '72f988bf-86f1-41af-91ab-2d7cd011d/..',
  '72f988bf-86f1-41af-91ab-2d7cd011db4?',
];

let idp;
beforeAll(async () => {
  idp = await startMockIdp({ multiTenant: true });
});
beforeEach(() => {
  idp.reset();
  obo.configure(optionsFor(idp, { tokenEndpoint: idp.tokenEndpointFor('common') }));
});
afterAll(async () => {
  obo.configure(null);
  await idp.close();
});

describe('home-tenant routing of hostile tids', () => {
  it.each(GUID_SHAPED)('a tid %j with the dashes of a GUID keeps the common endpoint', async (tid) => {
    expect(tid.split('-').map((part) => part.length)).toEqual([8, 4, 4, 4, 12]);
    const assertion = userToken({ tid, oid: 'user-oid' });
    const { value, error } = await settle(obo.acquireOboToken({ assertion, scopes: 'api://s' }));
    expect(idp.tokenRequests().map((request) => request.path)).toEqual(['/common/oauth2/v2.0/token']);
    expect(idp.tokenRequests()[0].tenant).toBe('common');
    expect(error).toBeUndefined();
    expect(value.access_token).toBe(idp.expectedToken(assertion, 'api://s'));
  });

  it('a GUID tid, the control, is routed to its tenant', async () => {
    const assertion = userToken({ tid: TENANT_ID, oid: 'user-oid' });
    await obo.acquireOboToken({ assertion, scopes: 'api://s' });
    expect(idp.tokenRequests()[0].path).toBe(`/${TENANT_ID}/oauth2/v2.0/token`);
  });
});
