<?php
// Roundcube signs users in at the OpenID provider ("generic" OAuth) and logs into IMAP and SMTP
// with the access token (XOAUTH2 / OAUTHBEARER). It talks to sasl-gate, never to Dovecot or
// Postfix directly: imap_host / smtp_host come from compose.yaml
// (ROUNDCUBEMAIL_DEFAULT_HOST=ssl://mail.example.com, port 993; SMTP port 465), and inside the
// compose network mail.example.com is an alias of sasl-gate, so TLS is checked against the
// real certificate. The roundcube/roundcubemail image includes every *.php in
// /var/roundcube/config after its own settings.
//
// The client secret is not here: compose.yaml passes it as the secret
// roundcube_oauth_client_secret, which the image turns into $config['oauth_client_secret'].

$config['oauth_provider'] = 'generic';
$config['oauth_provider_name'] = 'Example SSO';
$config['oauth_client_id'] = 'mail';

// Authentik (application slug "mail"). The authorize, token and userinfo endpoints are the same
// for every Authentik application; the issuer and keys are per application.
$config['oauth_auth_uri'] = 'https://auth.example.com/application/o/authorize/';
$config['oauth_token_uri'] = 'https://auth.example.com/application/o/token/';
$config['oauth_identity_uri'] = 'https://auth.example.com/application/o/userinfo/';
// Keycloak (realm "example") instead:
// $config['oauth_auth_uri'] = 'https://auth.example.com/realms/example/protocol/openid-connect/auth';
// $config['oauth_token_uri'] = 'https://auth.example.com/realms/example/protocol/openid-connect/token';
// $config['oauth_identity_uri'] = 'https://auth.example.com/realms/example/protocol/openid-connect/userinfo';
// Roundcube 1.7 can read all endpoints from the discovery document instead:
// $config['oauth_config_uri'] = 'https://auth.example.com/application/o/mail/.well-known/openid-configuration';

// email: the claim sasl-gate reads the mailbox from (oauth.usernameClaims) and compares with
// the user name Roundcube logs in with. offline_access: a refresh token, so Roundcube can renew
// the short-lived access token instead of ending the session (Authentik issues one only for
// this scope, and only if the provider has the offline_access scope mapping).
$config['oauth_scope'] = 'openid email profile offline_access';
// The IMAP/SMTP user name: the same claim sasl-gate checks.
$config['oauth_identity_fields'] = ['email'];

// Mail filters (ROUNDCUBEMAIL_PLUGINS with managesieve in compose.yaml): the managesieve plugin
// connects to sasl-gate's ManageSieve listener, upgrades with STARTTLS and, for a user signed in
// with OAuth, authenticates with XOAUTH2 and the same access token as IMAP; sasl-gate logs in to
// Dovecot's managesieve as the master account. Password users go through with PLAIN.
// $config['managesieve_host'] = 'tls://mail.example.com';
// $config['managesieve_port'] = 4190;

// Keep certificate checks on (the default); never turn them off in production.
$config['oauth_verify_peer'] = true;
// Send users to the provider straight away instead of showing Roundcube's login form.
$config['oauth_login_redirect'] = false;
