import { ballastTsup } from '../../tsup.shared.js'

export default ballastTsup(['src/index.ts'])
