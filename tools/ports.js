import { createServer } from 'node:net';
/** Asks the kernel for a currently unused TCP port on `host` (racy by nature: bind soon after). */
export function freePort(host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.unref();
        server.once('error', reject);
        server.listen({ port: 0, host, exclusive: true }, () => {
            const address = server.address();
            if (address === null || typeof address === 'string') {
                server.close();
                reject(new Error(`could not read the port of a listener on ${host}`));
                return;
            }
            const { port } = address;
            server.close((err) => (err ? reject(err) : resolve(port)));
        });
    });
}
//# sourceMappingURL=ports.js.map