// The session CA, leaf minting and upstream verification.
#include "mitm-proxy/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <ctime>

namespace guard::proxy {
namespace {

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

bssl::UniquePtr<EVP_PKEY> newEcKey() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  if (!ec || !key || !EC_KEY_generate_key(ec.get()) || !EVP_PKEY_assign_EC_KEY(key.get(), ec.release())) {
    return nullptr;
  }
  return key;
}

bool setName(X509_NAME* name, const std::string& cn) {
  return X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                    reinterpret_cast<const uint8_t*>("guard session"), -1, -1,
                                    0) &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    reinterpret_cast<const uint8_t*>(cn.c_str()), -1, -1, 0);
}

// keyId is the SHA-1 of the public key bits (RFC 5280 4.2.1.2, method 1).
bssl::UniquePtr<ASN1_OCTET_STRING> keyId(X509* cert) {
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!X509_pubkey_digest(cert, EVP_sha1(), md, &len)) {
    return nullptr;
  }
  bssl::UniquePtr<ASN1_OCTET_STRING> id(ASN1_OCTET_STRING_new());
  if (!id || !ASN1_OCTET_STRING_set(id.get(), md, static_cast<int>(len))) {
    return nullptr;
  }
  return id;
}

// prepare fills the fields every certificate here shares.
bool prepare(X509* cert, uint64_t serial, EVP_PKEY* key, const std::string& cn,
             X509_NAME* issuer) {
  bssl::UniquePtr<ASN1_INTEGER> sn(ASN1_INTEGER_new());
  time_t now = time(nullptr);
  return sn && ASN1_INTEGER_set_uint64(sn.get(), serial) && X509_set_version(cert, X509_VERSION_3) &&
         X509_set_serialNumber(cert, sn.get()) &&
         X509_time_adj_ex(X509_getm_notBefore(cert), 0, -3600, &now) &&
         X509_time_adj_ex(X509_getm_notAfter(cert), 7, 0, &now) &&
         setName(X509_get_subject_name(cert), cn) &&
         X509_set_issuer_name(cert, issuer != nullptr ? issuer : X509_get_subject_name(cert)) &&
         X509_set_pubkey(cert, key);
}

bool addKeyUsage(X509* cert, std::initializer_list<int> bits) {
  bssl::UniquePtr<ASN1_BIT_STRING> ku(ASN1_BIT_STRING_new());
  if (!ku) {
    return false;
  }
  for (int bit : bits) {
    if (!ASN1_BIT_STRING_set_bit(ku.get(), bit, 1)) {
      return false;
    }
  }
  return X509_add1_ext_i2d(cert, NID_key_usage, ku.get(), 1, 0) == 1;
}

// ipLiteralFamily returns AF_INET or AF_INET6 when NAME is a plain address
// literal (its bytes in IP), else 0.
int ipLiteralFamily(const std::string& name, uint8_t ip[16]) {
  if (inet_pton(AF_INET, name.c_str(), ip) == 1) {
    return AF_INET;
  }
  return inet_pton(AF_INET6, name.c_str(), ip) == 1 ? AF_INET6 : 0;
}

}  // namespace

std::string tlsErrorText() {
  uint32_t e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) {
    return "unknown TLS error";
  }
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

Result<std::shared_ptr<SessionCa>> SessionCa::create() {
  auto ca = std::make_shared<SessionCa>();
  ca->ca_key_ = newEcKey();
  ca->leaf_key_ = newEcKey();
  ca->ca_cert_.reset(X509_new());
  uint64_t serial = 0;
  RAND_bytes(reinterpret_cast<uint8_t*>(&serial), sizeof(serial));
  serial >>= 1;
  X509* c = ca->ca_cert_.get();
  bssl::UniquePtr<BASIC_CONSTRAINTS> bc(BASIC_CONSTRAINTS_new());
  bool ok = ca->ca_key_ && ca->leaf_key_ && c && bc &&
            prepare(c, serial, ca->ca_key_.get(), "guard session CA", nullptr);
  if (ok) {
    bc->ca = 0xff;
    bssl::UniquePtr<ASN1_OCTET_STRING> ski = keyId(c);
    ok = ski && X509_add1_ext_i2d(c, NID_basic_constraints, bc.get(), 1, 0) == 1 &&
         addKeyUsage(c, {5, 6}) &&  // keyCertSign, cRLSign
         X509_add1_ext_i2d(c, NID_subject_key_identifier, ski.get(), 0, 0) == 1 &&
         X509_sign(c, ca->ca_key_.get(), EVP_sha256()) != 0;
  }
  bssl::UniquePtr<BIO> pem(BIO_new(BIO_s_mem()));
  ok = ok && pem && PEM_write_bio_X509(pem.get(), c);
  ca->server_ctx_.reset(SSL_CTX_new(TLS_method()));
  ok = ok && ca->server_ctx_ &&
       SSL_CTX_set_min_proto_version(ca->server_ctx_.get(), TLS1_2_VERSION);
  if (!ok) {
    return Error(ErrorCode::kInternal, "cannot create the session CA: " + tlsErrorText());
  }
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(pem.get(), &data, &len);
  ca->cert_pem_.assign(reinterpret_cast<const char*>(data), len);
  SSL_CTX_set_alpn_select_cb(
      ca->server_ctx_.get(),
      [](SSL*, const uint8_t** out, uint8_t* out_len, const uint8_t* in, unsigned in_len, void*) {
        uint8_t* selected = nullptr;
        if (SSL_select_next_proto(&selected, out_len, kAlpnHttp11, sizeof(kAlpnHttp11), in,
                                  in_len) != OPENSSL_NPN_NEGOTIATED) {
          return SSL_TLSEXT_ERR_NOACK;  // h2-only clients fall back to no ALPN
        }
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
      },
      nullptr);
  return ca;
}

bssl::UniquePtr<X509> SessionCa::leafFor(const std::string& name) {
  bssl::UniquePtr<X509> cert(X509_new());
  bssl::UniquePtr<GENERAL_NAMES> sans(sk_GENERAL_NAME_new_null());
  bssl::UniquePtr<GENERAL_NAME> san(GENERAL_NAME_new());
  if (!cert || !sans || !san ||
      !prepare(cert.get(), ++serial_, leaf_key_.get(), name.substr(0, 64),
               X509_get_subject_name(ca_cert_.get()))) {
    return nullptr;
  }
  uint8_t ip[16];
  int family = ipLiteralFamily(name, ip);
  ASN1_OCTET_STRING* value = ASN1_OCTET_STRING_new();
  if (value == nullptr) {
    return nullptr;
  }
  if (family != 0) {
    ASN1_OCTET_STRING_set(value, ip, family == AF_INET ? 4 : 16);
    GENERAL_NAME_set0_value(san.get(), GEN_IPADD, value);
  } else {
    ASN1_STRING_set(value, name.data(), static_cast<int>(name.size()));
    value->type = V_ASN1_IA5STRING;
    GENERAL_NAME_set0_value(san.get(), GEN_DNS, value);
  }
  if (!sk_GENERAL_NAME_push(sans.get(), san.get())) {
    return nullptr;
  }
  san.release();
  bssl::UniquePtr<ASN1_OCTET_STRING> ski = keyId(cert.get());
  bssl::UniquePtr<ASN1_OCTET_STRING> ca_ski = keyId(ca_cert_.get());
  bssl::UniquePtr<AUTHORITY_KEYID> aki(AUTHORITY_KEYID_new());
  bssl::UniquePtr<EXTENDED_KEY_USAGE> eku(sk_ASN1_OBJECT_new_null());
  if (!ski || !ca_ski || !aki || !eku || !sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_server_auth))) {
    return nullptr;
  }
  aki->keyid = ca_ski.release();
  if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, sans.get(), 0, 0) != 1 ||
      !addKeyUsage(cert.get(), {0}) ||  // digitalSignature
      X509_add1_ext_i2d(cert.get(), NID_ext_key_usage, eku.get(), 0, 0) != 1 ||
      X509_add1_ext_i2d(cert.get(), NID_subject_key_identifier, ski.get(), 0, 0) != 1 ||
      X509_add1_ext_i2d(cert.get(), NID_authority_key_identifier, aki.get(), 0, 0) != 1 ||
      X509_sign(cert.get(), ca_key_.get(), EVP_sha256()) == 0) {
    return nullptr;
  }
  return cert;
}

SSL* SessionCa::newServer(const std::string& name) {
  auto it = leaves_.find(name);
  if (it == leaves_.end()) {
    bssl::UniquePtr<X509> leaf = leafFor(name);
    if (!leaf) {
      return nullptr;
    }
    if (leaves_.size() >= 4096) {
      leaves_.clear();  // bounded: a session that names more hosts mints again
    }
    it = leaves_.emplace(name, std::move(leaf)).first;
  }
  bssl::UniquePtr<SSL> ssl(SSL_new(server_ctx_.get()));
  if (!ssl || !SSL_use_certificate(ssl.get(), it->second.get()) ||
      !SSL_use_PrivateKey(ssl.get(), leaf_key_.get())) {
    return nullptr;
  }
  SSL_set_accept_state(ssl.get());
  return ssl.release();
}

Result<std::unique_ptr<UpstreamTls>> UpstreamTls::create(const std::string& ca_file) {
  auto up = std::make_unique<UpstreamTls>();
  up->ctx_.reset(SSL_CTX_new(TLS_method()));
  if (!up->ctx_ || !SSL_CTX_set_min_proto_version(up->ctx_.get(), TLS1_2_VERSION)) {
    return Error(ErrorCode::kInternal, "cannot create the upstream TLS context: " + tlsErrorText());
  }
  int fd = open(ca_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, "cannot read the upstream trust store " + ca_file, e);
  }
  close(fd);
  up->ca_file_ = ca_file;
  SSL_CTX_set_verify(up->ctx_.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_alpn_protos(up->ctx_.get(), kAlpnHttp11, sizeof(kAlpnHttp11));
  SSL_CTX_set_session_cache_mode(up->ctx_.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_set_app_data(up->ctx_.get(), up.get());
  SSL_CTX_sess_set_new_cb(up->ctx_.get(), &UpstreamTls::onNewSession);
  return up;
}

int UpstreamTls::onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<UpstreamTls*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (self == nullptr || name == nullptr) {
    return 0;  // not kept (IP literals send no name)
  }
  if (self->sessions_.size() >= 4096) {
    self->sessions_.clear();
  }
  self->sessions_[name].reset(session);  // the session was verified for NAME
  return 1;
}

SSL* UpstreamTls::newClient(const std::string& name) {
  if (!loaded_) {
    if (!error_.empty()) {
      return nullptr;
    }
    if (!SSL_CTX_load_verify_locations(ctx_.get(), ca_file_.c_str(), nullptr)) {
      error_ = "cannot load the upstream trust store " + ca_file_ + ": " + tlsErrorText();
      return nullptr;
    }
    loaded_ = true;
  }
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx_.get()));
  if (!ssl) {
    return nullptr;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  uint8_t ip[16];
  if (ipLiteralFamily(name, ip) != 0) {
    if (!X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())) {
      return nullptr;
    }
  } else if (!SSL_set_tlsext_host_name(ssl.get(), name.c_str()) ||
             !X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size())) {
    return nullptr;
  } else if (auto it = sessions_.find(name); it != sessions_.end()) {
    SSL_set_session(ssl.get(), it->second.get());
  }
  SSL_set_connect_state(ssl.get());
  return ssl.release();
}

}  // namespace guard::proxy
