import { ballastTsup } from '../../tsup.shared.js'

export default ballastTsup(['src/index.ts', 'src/express.ts', 'src/fastify.ts', 'src/http.ts'])
