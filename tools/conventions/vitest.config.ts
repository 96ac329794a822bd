import { ballastProject } from '../../vitest.shared.js'

export default ballastProject('@ballast/conventions')
