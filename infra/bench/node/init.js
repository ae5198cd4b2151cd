// The Node 20 floor of infra/bench.sh: what a Node Lambda on the v3 SDK does at init
// (load and construct the DynamoDB, S3 and SQS clients), then the Runtime API loop the
// Node runtime runs, answering every event. Timed like the Rust binaries: spawn -> first
// GET /next, spawn -> first response posted.
'use strict';

const http = require('node:http');
const { DynamoDBClient } = require('@aws-sdk/client-dynamodb');
const { S3Client } = require('@aws-sdk/client-s3');
const { SQSClient } = require('@aws-sdk/client-sqs');

const clients = {
  dynamo: new DynamoDBClient({}),
  s3: new S3Client({ forcePathStyle: Boolean(process.env.AWS_ENDPOINT_URL) }),
  sqs: new SQSClient({}),
};

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const base = '/2018-06-01/runtime/invocation';

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body !== undefined) {
      req.setHeader('content-type', 'application/json');
      req.end(body);
    } else {
      req.end();
    }
  });
}

async function handler(event) {
  void clients;
  void event;
  return { statusCode: 200, body: 'hello' };
}

(async () => {
  for (;;) {
    const next = await request('GET', `${base}/next`);
    const id = next.headers['lambda-runtime-aws-request-id'];
    const result = await handler(JSON.parse(next.body.toString('utf8')));
    await request('POST', `${base}/${id}/response`, JSON.stringify(result));
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
