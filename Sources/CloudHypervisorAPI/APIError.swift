// Every refusal the API gives, and the one place that turns it into a status code.
import VMM

/// Why a request was refused: bad HTTP, a bad body, an unknown path, or the VMM's own
/// `ControlError`. `status` and `messages` are what the client receives.
public enum APIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No endpoint at this path.
    case notFound(path: String)
    /// The endpoint exists but takes another method.
    case wrongMethod(endpoint: String, allowed: HTTPMethod, received: HTTPMethod)
    /// The endpoint takes a JSON body and none came.
    case missingBody(endpoint: String, schema: String)
    /// The endpoint takes no body and one came.
    case unexpectedBody(endpoint: String)
    /// The body is malformed, mistyped, out of range, has unknown fields, or does not validate.
    case invalidBody(String)
    /// The body is larger than the server accepts.
    case bodyTooLarge(limit: Int)
    /// The request could not be parsed as HTTP/1.1.
    case malformedRequest(String)
    /// The client stopped sending in the middle of a request.
    case requestTimeout(seconds: Double)
    /// The VMM refused or failed the action.
    case control(endpoint: String, ControlError)

    /// The HTTP status, as Cloud Hypervisor's HTTP layer chooses it (vmm/src/api/http/mod.rs):
    /// bad requests, wrong methods and undecodable bodies are 400; an unknown path is 404; an
    /// action on a VM that was never created is 404 (`VmNotCreated`); every other failed
    /// action is 500 (`ApiError` → `InternalServerError`).
    public var status: HTTPStatus {
        switch self {
        case .notFound: .notFound
        // Cloud Hypervisor answers a method an endpoint does not take with 400, not 405.
        case .wrongMethod: .badRequest
        case .missingBody, .unexpectedBody, .invalidBody, .malformedRequest: .badRequest
        // micro_http refuses an oversized payload as a bad request too.
        case .bodyTooLarge: .badRequest
        case .requestTimeout: .requestTimeout
        case let .control(_, error): Self.status(for: error)
        }
    }

    /// The status for each `ControlError`, following Cloud Hypervisor's `api_error_status_code`:
    /// only `VmNotCreated` is singled out (404); an invalid configuration is a bad request (400,
    /// like a body that does not deserialize); every refused or failed action is 500.
    public static func status(for error: ControlError) -> HTTPStatus {
        switch error {
        case .vmNotCreated: .notFound
        case .invalidConfig, .absentFeature: .badRequest
        case .vmAlreadyCreated, .invalidState, .unsupported, .failed: .internalServerError
        }
    }

    /// The JSON error body: a list of sentences from the most general to the cause, as Cloud
    /// Hypervisor's `error_response` writes it.
    public var messages: [String] {
        switch self {
        case let .notFound(path):
            ["Not Found", "no endpoint at \(path); the API lives under /api/v1/ (vmm.ping, vm.info, vm.create, ...)"]
        case let .wrongMethod(endpoint, allowed, received):
            ["Bad Request", "\(endpoint) takes \(allowed.rawValue), not \(received.rawValue)"]
        case let .missingBody(endpoint, schema):
            ["Bad Request", "\(endpoint) needs a JSON body (\(schema))"]
        case let .unexpectedBody(endpoint):
            ["Bad Request", "\(endpoint) takes no body; send it with Content-Length: 0 or none"]
        case let .invalidBody(reason):
            ["Failed to deserialize JSON", reason]
        case let .bodyTooLarge(limit):
            ["Bad Request", "the body is larger than the \(limit) bytes this server accepts"]
        case let .malformedRequest(reason):
            ["Bad Request", "the request is not valid HTTP/1.1: \(reason)"]
        case let .requestTimeout(seconds):
            ["Request Timeout", "the request was not complete after \(seconds) seconds without data"]
        case let .control(endpoint, error):
            ["Error from API", "\(endpoint): \(error.description)"]
        }
    }

    /// The messages joined into one sentence.
    public var description: String { messages.joined(separator: ": ") }
}
