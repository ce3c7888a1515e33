// From a parsed request to a response: routing, body checks, and the VMMControl call. Runs
// on the API's worker thread (never on an event loop): control calls block.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOHTTP1
import VMM

/// A complete HTTP request as the router sees it.
public struct APIRequest: Sendable {
    /// The method.
    public var method: HTTPMethod
    /// The request target (`/api/v1/vm.info`).
    public var uri: String
    /// The body; `nil` when the request had none (or an empty one).
    public var body: [UInt8]?

    /// Creates a request.
    public init(method: HTTPMethod, uri: String, body: [UInt8]? = nil) {
        self.method = method
        self.uri = uri
        self.body = body
    }
}

/// A response: status and an optional JSON body.
public struct APIResponse: Sendable, Equatable {
    /// The status.
    public var status: HTTPResponseStatus
    /// The JSON body, if any.
    public var body: [UInt8]?

    /// Creates a response.
    public init(status: HTTPResponseStatus, body: [UInt8]? = nil) {
        self.status = status
        self.body = body
    }

    /// The response for a refusal: its status and the JSON list of messages.
    public init(error: APIError) {
        status = error.status
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        body = (try? encoder.encode(error.messages)).map { Array($0) } ?? Array("[]".utf8)
    }
}

/// Routes requests to a `VMMControl`. Stateless apart from the control; safe to call from
/// several threads if the control is.
public struct APIRouter: Sendable {
    /// The VMM being controlled.
    public let control: any VMMControl

    /// Creates a router for `control`.
    public init(control: any VMMControl) {
        self.control = control
    }

    /// Answers one request. Blocks while the control acts (a boot takes a while).
    public func respond(to request: APIRequest) -> APIResponse {
        do {
            return try route(request)
        } catch {
            return APIResponse(error: error)
        }
    }

    private func route(_ request: APIRequest) throws(APIError) -> APIResponse {
        guard let endpoint = APIEndpoint(path: request.uri) else { throw .notFound(path: request.uri) }
        guard request.method == endpoint.method else {
            throw .wrongMethod(endpoint: endpoint.rawValue, allowed: endpoint.method, received: request.method)
        }
        let body = request.body.flatMap { $0.isEmpty ? nil : $0 }
        switch endpoint.body {
        case .ignored:
            break
        case .none:
            if body != nil { throw .unexpectedBody(endpoint: endpoint.rawValue) }
        case .vmConfig:
            guard body != nil else { throw .missingBody(endpoint: endpoint.rawValue, schema: "VmConfig") }
        case let .unsupported(schema):
            guard let body else { throw .missingBody(endpoint: endpoint.rawValue, schema: schema) }
            try StrictJSON.requireObject(body, typeName: schema)
        }
        return try perform(endpoint, body: body)
    }

    private func perform(_ endpoint: APIEndpoint, body: [UInt8]?) throws(APIError) -> APIResponse {
        func act(_ action: () throws(ControlError) -> Void) throws(APIError) -> APIResponse {
            do { try action() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return APIResponse(status: .noContent)
        }
        switch endpoint {
        case .vmmPing:
            return try json(control.ping())
        case .vmmShutdown:
            // Cloud Hypervisor answers vmm.shutdown with 200 and no body (VmmShutdown's handler).
            do { try control.shutdownVMM() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return APIResponse(status: .ok)
        case .vmCreate:
            let config = try StrictJSON.decode(VMConfig.self, from: body ?? [], typeName: "VmConfig")
            do {
                try config.validate()
            } catch {
                throw .control(endpoint: endpoint.rawValue, .invalidConfig(error.description))
            }
            return try act { () throws(ControlError) in try control.create(config) }
        case .vmBoot: return try act(control.boot)
        case .vmDelete: return try act(control.delete)
        case .vmPause: return try act(control.pause)
        case .vmResume: return try act(control.resume)
        case .vmShutdown: return try act(control.shutdown)
        case .vmReboot: return try act(control.reboot)
        case .vmPowerButton: return try act(control.powerButton)
        case .vmInfo:
            let info: VMInfo
            do { info = try control.info() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return try json(info)
        case .vmCounters:
            let counters: [String: [String: UInt64]]
            do { counters = try control.counters() } catch { throw .control(endpoint: endpoint.rawValue, error) }
            return try json(counters)
        case .vmNmi, .vmAddDisk, .vmAddNet, .vmAddDevice, .vmAddFs, .vmAddPmem, .vmAddVsock, .vmAddVdpa, .vmAddUserDevice,
            .vmAddGenericVhostUser, .vmRemoveDevice, .vmResize, .vmResizeZone, .vmResizeDisk, .vmSnapshot, .vmRestore,
            .vmCoredump, .vmSendMigration, .vmReceiveMigration:
            throw .control(endpoint: endpoint.rawValue, .unsupported(action: endpoint.rawValue))
        }
    }

    private func json(_ value: some Encodable) throws(APIError) -> APIResponse {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return APIResponse(status: .ok, body: Array(try encoder.encode(value)))
        } catch {
            throw .control(endpoint: "response", .failed(action: "encoding the response", reason: "\(error)"))
        }
    }
}
